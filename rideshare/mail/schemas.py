"""Email request bodies."""

from marshmallow import Schema, fields, validate

from rideshare.validation import email_address, text, unicode_text


class WelcomeEmailSchema(Schema):
    email = email_address("The new user's address")
    name = text("The new user's name", 100)


class EmailJobSchema(Schema):
    """The data of an email job: each field checked as the worker builds and sends the message."""

    to = email_address("Recipient")
    subject = text("Subject line", 200)
    text = fields.String(required=True, validate=[validate.Length(max=100_000), unicode_text])
    html = fields.String(validate=[validate.Length(max=200_000), unicode_text])
