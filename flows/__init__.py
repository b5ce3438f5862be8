"""mixforge.flows: Prefect flows over the plain stage functions. The only importer of prefect."""
