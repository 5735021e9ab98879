"""Container layer: entries, chunks and the index on top of the format layer; writer, reader, safe extraction."""
