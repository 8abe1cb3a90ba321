"""Email: messages sent over SMTP by the email worker, each delivery recorded."""
