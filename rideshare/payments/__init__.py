"""Payments: charged through Stripe by the payment worker, with receipts."""
