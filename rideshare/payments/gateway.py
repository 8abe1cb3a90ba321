"""The payment gateway: Stripe PaymentIntents and Refunds through the official SDK."""

from typing import Any

import stripe
from flask import current_app

# Errors that another attempt can fix: network trouble, rate limits, Stripe 5xx.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    stripe.APIConnectionError,
    stripe.RateLimitError,
    stripe.APIError,
)


def stripe_client() -> stripe.StripeClient:
    """One client per app, pointed at STRIPE_API_BASE (localstripe in development)."""
    client = current_app.extensions.get("stripe")
    if client is None:
        cfg = current_app.config
        client = stripe.StripeClient(
            cfg["STRIPE_API_KEY"],
            base_addresses={"api": cfg["STRIPE_API_BASE"]},
            # Our job retries own the retry policy; the SDK must not retry on its own.
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=cfg["STRIPE_TIMEOUT"]),
        )
        current_app.extensions["stripe"] = client
    return client


def create_intent(
    *, amount_minor: int, currency: str, payment_method: str, idempotency_key: str, metadata: dict[str, Any]
) -> stripe.PaymentIntent:
    """Create a PaymentIntent without confirming it: nothing is charged yet."""
    return stripe_client().v1.payment_intents.create(
        params={
            "amount": amount_minor,
            "currency": currency.lower(),
            "payment_method": payment_method,
            # Cards only, confirmed server-side: nothing here can redirect a rider.
            "payment_method_types": ["card"],
            "metadata": metadata,
        },
        options={"idempotency_key": idempotency_key},
    )


def retrieve_intent(intent_id: str) -> stripe.PaymentIntent:
    """Where a PaymentIntent stands now."""
    return stripe_client().v1.payment_intents.retrieve(intent_id)


def confirm_intent(intent_id: str, *, idempotency_key: str) -> stripe.PaymentIntent:
    """Confirm (charge) a PaymentIntent; raises stripe.CardError on a decline."""
    return stripe_client().v1.payment_intents.confirm(intent_id, options={"idempotency_key": idempotency_key})


def cancel_intent(intent_id: str) -> str:
    """Cancel a PaymentIntent that was not charged; returns its status afterwards.

    'canceled' once it is (or was already), else the status that kept Stripe from
    cancelling it: 'succeeded' (charged), 'processing' (the charge is under way).
    Stripe refuses to confirm a cancelled intent, so whichever of a cancel and a
    confirm reaches it first wins, and the other learns so.
    """
    client = stripe_client()
    try:
        return client.v1.payment_intents.cancel(intent_id).status
    except stripe.InvalidRequestError:
        return client.v1.payment_intents.retrieve(intent_id).status


def find_refund(intent_id: str) -> stripe.Refund | None:
    """The refund Stripe holds for a PaymentIntent (made by an earlier delivery that died
    before it could record it), or None. A failed or cancelled refund does not count."""
    refunds = stripe_client().v1.refunds.list(params={"payment_intent": intent_id, "limit": 100})
    return next((r for r in refunds.data if r.status not in ("failed", "canceled")), None)


def create_refund(intent_id: str, *, idempotency_key: str, metadata: dict[str, Any]) -> stripe.Refund:
    """Refund a charged PaymentIntent in full."""
    return stripe_client().v1.refunds.create(
        params={"payment_intent": intent_id, "metadata": metadata},
        options={"idempotency_key": idempotency_key},
    )
