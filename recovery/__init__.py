"""The recovery service: owners report thefts, police follow alerts and sightings, ops run the
reader registry, over an HTTP API and its console.

Front door: `recovery.api.create_api(ServiceContext(...))`, then `await ctx.start()`.
"""
