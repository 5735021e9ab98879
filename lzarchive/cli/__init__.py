"""CLI layer: typer commands over lzarchive.api; imports nothing below the API."""
