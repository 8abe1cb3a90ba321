"""A payment's emails, the receipt and the refund receipt: what they say and their job ids, in
one place for the charge and the refund (rideshare.payments.charge) and the ride settlement
flow (rideshare.rides.settlement), which queues the receipt as a step of its own."""

from typing import Any

from rideshare.payments.models import Payment


def receipt_number(payment_id: int) -> str:
    return f"RCPT-{payment_id:08d}"


def receipt_job_id(payment: Payment) -> str:
    """The receipt email's job id: the charge's staging of it and a settlement flow's step use the
    same one, so whichever is stored first is the only receipt (the job store adds an id once)."""
    return f"receipt-{payment.job_id}"


def refund_receipt_job_id(payment: Payment) -> str:
    return f"refund-receipt-{payment.job_id}"


def refund_job_id(payment: Payment) -> str:
    """The job id of an admin's refund of the payment (a flow's compensation has its own, comp-<charge>)."""
    return f"refund-{payment.job_id}"


def receipt_message(payment: Payment) -> dict[str, Any]:
    """The email job's data of the payment's receipt (sent once it is charged)."""
    number = receipt_number(payment.id)
    return {
        "to": payment.receipt_email,
        "subject": f"Your receipt {number}",
        "text": (
            f"Thanks for riding with us.\nReceipt {number}: "
            f"{payment.amount} {payment.currency} for ride {payment.ride_id}."
        ),
        "html": f"<h1>Receipt {number}</h1><p>{payment.amount} {payment.currency} for ride {payment.ride_id}.</p>",
    }


def refund_message(payment: Payment) -> dict[str, Any]:
    """The email job's data of the payment's refund receipt."""
    number = receipt_number(payment.id)
    return {
        "to": payment.receipt_email,
        "subject": f"Your refund for receipt {number}",
        "text": (
            f"We refunded {payment.amount} {payment.currency} for ride {payment.ride_id} "
            f"(receipt {number}). It reaches your card in a few days."
        ),
        "html": (
            f"<h1>Refund for receipt {number}</h1><p>{payment.amount} {payment.currency}"
            f" for ride {payment.ride_id} were refunded.</p>"
        ),
    }


def email_options(payment: Payment) -> dict[str, Any]:
    """The owner and tags of a payment's email jobs."""
    return {"owner": payment.user_id, "tags": {"rideId": payment.ride_id, "paymentId": payment.id}}
