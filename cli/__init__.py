"""The command line (`ticketing`) and the demo: serve, worker, migrate, import, mailbox admin."""
