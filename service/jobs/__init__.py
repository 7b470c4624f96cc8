"""Long videos as asynchronous jobs: state (SQLite), spooled uploads and results on disk, a worker task."""
