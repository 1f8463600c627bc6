"""The dashboard's write actions, one module per area: each parses its form, calls the service the admin API uses
(which commits the change with its audit row), and redirects with a flash message or shows the error on the page."""
