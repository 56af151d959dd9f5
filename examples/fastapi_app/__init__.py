"""A FastAPI app that registers users and sends their emails, Slack notes and CRM updates through
pgqueue, in the request's transaction: ``python -m examples.fastapi_app``."""
