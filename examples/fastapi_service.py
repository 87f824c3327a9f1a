"""A FastAPI inference service that reports every prediction to streamdrift.

The service needs only the producer client (the streamdrift-client distribution, ``client/`` of
this repository), not the worker. FastAPI is not a dependency of either; to run this example:

    pip install ./client fastapi uvicorn
    STREAMDRIFT_KAFKA_BOOTSTRAP=localhost:9092 uvicorn examples.fastapi_service:create_app --factory
    curl -s localhost:8000/predict -H 'content-type: application/json' \\
         -d '{"features": {"amount": 120.0, "country": "DE", "age": 31}}'

The client is created at start-up and closed at shutdown (the FastAPI lifespan), configured
like the workers from the ``STREAMDRIFT_*`` variables (bootstrap, TLS/SASL, input topic).
``emit`` never blocks and never raises, so it is called straight from the async handler: if
Kafka is slow or down, predictions are still served and the lost events are counted
(``GET /drift-client``).

FastAPI is imported only inside :func:`create_app`: the rest (the model and :func:`predict`)
is plain Python, importable and testable without it.
"""

import math
import uuid
from contextlib import asynccontextmanager
from typing import Any, Callable, Optional, Union

from pydantic import BaseModel

from streamdrift.client import DriftClient

MODEL = "fraud"
MODEL_VERSION = "3"

Scalar = Union[float, str, bool, None]


class PredictRequest(BaseModel):
    features: dict[str, Scalar]
    request_id: Optional[str] = None  # becomes the event_id: send the label later under it


def score(features: dict[str, Scalar]) -> float:
    """The "model": a fixed logistic score (stands in for a real model's predict)."""
    amount = features.get("amount")
    z = 0.02 * float(amount) - 3.0 if isinstance(amount, (int, float)) and not isinstance(amount, bool) else -3.0
    if features.get("country") not in ("DE", "FR", "NL"):
        z += 1.0
    return round(1.0 / (1.0 + math.exp(-z)), 6)


def predict(client: DriftClient, request: PredictRequest) -> dict[str, Any]:
    """Serve one prediction and report it to streamdrift (non-blocking)."""
    event_id = request.request_id or uuid.uuid4().hex
    probability = score(request.features)
    client.emit(MODEL, request.features, prediction=probability, model_version=MODEL_VERSION, event_id=event_id)
    return {"event_id": event_id, "fraud_probability": probability}


def create_app(client_factory: Callable[[], DriftClient] = lambda: DriftClient.from_env(linger=1.0)):
    """The FastAPI app; ``client_factory`` makes the streamdrift client at start-up."""
    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.drift = client_factory()
        try:
            yield
        finally:
            stats = await app.state.drift.aclose(timeout=5.0)  # drain what is queued, bounded
            print(f"streamdrift client closed: {stats.as_dict()}")

    app = FastAPI(title="fraud model", lifespan=lifespan)

    @app.post("/predict")
    async def predict_endpoint(request: PredictRequest) -> dict[str, Any]:
        return predict(app.state.drift, request)

    @app.get("/drift-client")
    async def drift_client_stats() -> dict[str, Any]:
        return app.state.drift.stats().as_dict()

    return app
