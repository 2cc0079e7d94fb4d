"""The Dagster definitions: assets, schedule, sensors, resources (collected in `reinforcement_assets.definitions`)."""
