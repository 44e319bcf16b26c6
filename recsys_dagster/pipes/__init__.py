"""Code that runs outside the Dagster process and talks to it through Dagster Pipes."""
