"""Email request bodies."""

from marshmallow import Schema, fields, validate

from rideshare.validation import text


class WelcomeEmailSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    name = text("The new user's name", 100)
