"""`tunewise ui`: the local web app. `app.build_web_app` builds it; `worker` runs one ladder in a child
process; `jobs` queues those runs; `security` checks the token on every request."""
