"""Reporting: console tables now; the HTML report comes with the report issue."""
