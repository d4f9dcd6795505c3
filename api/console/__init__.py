"""The console: the log's views for people, served by the web process under ``/console``."""
