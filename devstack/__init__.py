"""Local stand-ins for the outside world, for development and tests: never for production."""
