"""The web app: ``POST /register`` enqueues the three jobs in the request's transaction;
``POST /register-inline`` does the same work before answering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from .tasks import (
    CRM_ATTEMPTS,
    CrmUnavailable,
    close_effects_pool,
    notify_slack,
    queue,
    send_welcome_email,
    sync_crm,
)


class Registration(BaseModel):
    email: str


def make_engine(database_url: str) -> AsyncEngine:
    async def connect() -> Any:
        return await psycopg.AsyncConnection.connect(database_url)

    # async_creator: any URL psycopg takes (the embedded server's Unix socket too).
    return create_async_engine("postgresql+psycopg://", async_creator=connect, pool_size=10, max_overflow=0)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = make_engine(queue.database_url)
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        yield
    finally:
        await engine.dispose()
        await close_effects_pool()
        await queue.aclose()  # pgqueue's own pools


api = FastAPI(title="pgqueue FastAPI example", lifespan=lifespan)


async def insert_user(session: Any, email: str) -> int:
    result = await session.execute(text("INSERT INTO users (email) VALUES (:email) RETURNING id"), {"email": email})
    return int(result.scalar_one())


@api.post("/register")
async def register(registration: Registration) -> dict[str, int]:
    """The user and its three jobs commit together, or none of them does."""
    async with api.state.sessions() as session, session.begin():
        user_id = await insert_user(session, registration.email)
        await send_welcome_email.aenqueue(user_id=user_id, email=registration.email, conn=session)
        await notify_slack.aenqueue(user_id=user_id, conn=session)
        await sync_crm.aenqueue(user_id=user_id, conn=session)
    return {"id": user_id}


@api.post("/register-inline")
async def register_inline(registration: Registration) -> dict[str, int]:
    """The same work done before answering: the request waits for the mail server, Slack and the CRM."""
    async with api.state.sessions() as session, session.begin():
        user_id = await insert_user(session, registration.email)
    await send_welcome_email(user_id=user_id, email=registration.email)
    await notify_slack(user_id=user_id)
    for attempt in range(1, CRM_ATTEMPTS + 1):
        try:
            await sync_crm(user_id=user_id)
            break
        except CrmUnavailable:
            if attempt == CRM_ATTEMPTS:
                raise
            await asyncio.sleep(0.2)
    return {"id": user_id}


@api.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
