"""mixforge.proxy_training: small proxy language models trained on mixtures (lands with the proxy issue)."""
