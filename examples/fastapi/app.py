"""An example FastAPI back end of a secureFlows application.

    SECUREFLOWS_ISSUER=http://127.0.0.1:8080/w/<workspace> SECUREFLOWS_CLIENT_ID=<client id> \
        uvicorn app:app --port 8000

Every route that depends on ``session`` answers only callers with a valid session token.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from secureflows_auth import Problem, SessionTokenVerifier


def create_app(issuer: str, client_id: str) -> FastAPI:
    app = FastAPI(title="secureFlows FastAPI example")
    session = SessionTokenVerifier(issuer, client_id)

    @app.exception_handler(Problem)
    async def problem(_: Request, e: Problem) -> JSONResponse:
        headers = {"www-authenticate": 'Bearer error="invalid_token"'} if e.status_code == 401 else None
        return JSONResponse(e.body, status_code=e.status_code, media_type="application/problem+json", headers=headers)

    @app.get("/me")
    def me(claims: dict[str, Any] = Depends(session)) -> dict[str, Any]:
        # Identity comes from the verified token only.
        return {"user": claims["sub"], "workspace": claims["ws"], "role": claims["role"]}

    return app


if "SECUREFLOWS_ISSUER" in os.environ:
    app = create_app(os.environ["SECUREFLOWS_ISSUER"], os.environ["SECUREFLOWS_CLIENT_ID"])
