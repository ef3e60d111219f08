"""Test harnesses: private PostgreSQL and RabbitMQ servers, the OTLP receiver, helm, the chaos suite."""
