"""The web console for clients' staff: logins, sessions, roles and the pages, served by
``serve`` on its HTTP port under ``/`` (the API keeps ``/v1``)."""
