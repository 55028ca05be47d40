"""The versioned JSON API (`/api/v1`), one module per resource."""

from fastapi import APIRouter

from server.routes import assignments, roster, staff, submissions, system

api = APIRouter(prefix="/api/v1")
for module in (system, assignments, submissions, roster, staff):
    api.include_router(module.router)
