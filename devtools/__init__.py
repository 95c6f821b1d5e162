"""Development and test tools (fake Gmail, fake Pub/Sub push). The product never imports them;
only the demo loads them, lazily, on its dev-only path."""
