"""The web dashboard (``pip install 'pgqueue[dashboard]'``): queues, throughput, jobs, workers.

Serve it with ``pgqueue dashboard``, or mount the ASGI app in your own Starlette or FastAPI app:

>>> api.mount("/pgqueue", pgqueue.dashboard.create_app(app, token=os.environ["PGQUEUE_DASHBOARD_TOKEN"]))
"""

from .web import create_app

__all__ = ["create_app"]
