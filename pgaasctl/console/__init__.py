"""The web console of `pgaasctl serve`: server-rendered pages (Jinja2) made lively with htmx, on the service API
alone. Every page reads through the API (in-process, with the signed-in user's session token), and every form
submits to it; the console decides nothing the API does not say (`actions` on each object)."""
