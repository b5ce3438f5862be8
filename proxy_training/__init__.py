"""mixforge.proxy_training: small proxy language models trained on mixtures (see proxy_training/proxy.py for one run)."""
