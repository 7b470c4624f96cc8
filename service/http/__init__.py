"""The HTTP edge: the app factory and lifespan, routes, dependencies, middleware, keys, errors, uvicorn."""
