"""Rides: requested, then completed by their driver."""
