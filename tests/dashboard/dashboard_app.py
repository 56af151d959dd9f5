"""Tasks for the browser test's real worker (``pgqueue work dashboard_app:app``)."""

import time

import pgqueue

app = pgqueue.App()


@app.task("send-email", queue="emails")
def send_email(to: str) -> dict:
    time.sleep(0.01)
    return {"sent": to}


@app.task("charge-card", queue="billing", max_attempts=1)
def charge_card(order: int) -> dict:
    # Fails its first attempt for good (max_attempts=1); a retry from the dashboard succeeds.
    if pgqueue.current_job().attempt == 1:
        raise ConnectionError(f"payment gateway timed out for order {order}")
    return {"charged": order}


@app.task("render", queue="emails")
def render(html: str) -> str:
    return html
