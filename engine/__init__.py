"""The router's engine: planner, executor, routing, backend pool and upstream clients."""
