"""Analytics: ride events stored in SQL and rolled up per day and per driver."""
