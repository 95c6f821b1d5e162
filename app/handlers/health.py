"""Liveness and readiness."""

from __future__ import annotations

from aiohttp import web

from app.apidoc import Doc, ok
from app.errors import ApiError
from app.http import EXPECTED_SCHEMA, POOL, Route


async def healthz(request: web.Request) -> web.Response:
    """The process is up (no database call)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The database answers and carries exactly the migrations and SQL code of this build."""
    scope = request.query.get("scope")
    if scope not in (None, "pipeline"):
        raise ApiError(422, "invalid_scope", "scope must be pipeline (or left out).")
    async with request.app[POOL].connection(timeout=5) as conn:
        cursor = await conn.execute("SELECT api.schema_status() AS status")
        status = (await cursor.fetchone())["status"]
        expected = request.app[EXPECTED_SCHEMA]
        missing = sorted(set(expected["migrations"]) - set(status["migrations"]))
        if missing:
            raise ApiError(
                503, "migrations_pending", f"Run `ticketing migrate`: pending {', '.join(missing)}."
            )
        if status["code_hash"] != expected["code_hash"]:
            raise ApiError(
                503,
                "code_outdated",
                "Run `ticketing migrate`: the SQL code differs from this build.",
            )
        # Only once the code is known to be this build's: its function exists.
        cursor = await conn.execute("SELECT api.pipeline_health() AS pipeline")
        pipeline = (await cursor.fetchone())["pipeline"]
    if scope == "pipeline" and pipeline["problems"]:
        raise ApiError(503, "pipeline_degraded", "; ".join(pipeline["problems"]) + ".")
    return web.json_response(
        {
            "status": "ready",
            "migrations": len(status["migrations"]),
            "code_hash": status["code_hash"],
            "pipeline": pipeline,
        }
    )


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/healthz",
        healthz,
        None,
        rate_limited=False,
        database=False,
        doc=Doc(
            operation_id="healthz",
            tag="health",
            summary="Liveness",
            description="The process is up (no database call).",
            response=ok("Alive.", "Health"),
        ),
    ),
    Route(
        "GET",
        "/readyz",
        readyz,
        None,
        sql=("api.schema_status", "api.pipeline_health"),
        rate_limited=False,
        doc=Doc(
            operation_id="readyz",
            tag="health",
            summary="Readiness",
            description=(
                "200 only when the database answers and carries this build's migrations and SQL "
                "code; 503 migrations_pending, code_outdated or database_unavailable otherwise. "
                "The body reports the ingestion pipeline's health (live workers, stuck jobs, "
                "mailboxes by sync health); with `scope=pipeline` a degraded pipeline answers "
                "503 pipeline_degraded (for a monitoring probe, not a load balancer)."
            ),
            response=ok("Ready.", "Ready"),
            query=(
                {
                    "name": "scope",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["pipeline"]},
                    "description": "`pipeline`: also 503 when ingestion cannot run by itself; any other "
                    "value is 422 invalid_scope.",
                },
            ),
            errors=(422,),
        ),
    ),
)
