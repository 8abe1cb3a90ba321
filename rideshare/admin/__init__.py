"""Admin: queue and job control over JSON, a server-rendered dashboard, and the audit log."""
