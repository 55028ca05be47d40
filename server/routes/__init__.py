"""The versioned JSON API (`/api/v1`), one module per resource."""

from fastapi import APIRouter

from server.routes import assignments, decisions, roster, staff, submissions, system

AUTH = {401: {"description": "missing or invalid API token"}, 403: {"description": "not allowed for this role"}}

api = APIRouter(prefix="/api/v1")
for module in (system, assignments, submissions, roster, staff, decisions):
    api.include_router(module.router, responses=AUTH)
