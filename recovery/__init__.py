"""The recovery service: owners report thefts, police intercept, ops run the registry.

Front door: `recovery.api.create_api(ServiceContext(...))`. Routes live in `recovery.routes`;
case lifecycle and hotlist publishing in `casework`; police access rules and the audit log in
`audit`; the alerts topic follower in `alert_feed`; the SSE stream in `sse`; the console's static
files in `console/`.
"""
