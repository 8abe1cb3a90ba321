"""Email request bodies."""

from marshmallow import Schema, fields, validate

from rideshare.validation import text


class WelcomeEmailSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    name = text("The new user's name", 100)


class EmailJobSchema(Schema):
    """The data of an email job."""

    to = fields.Email(required=True, validate=validate.Length(max=254))
    subject = text("Subject line", 200)
    text = fields.String(required=True, validate=validate.Length(max=100_000))
    html = fields.String(validate=validate.Length(max=200_000))
