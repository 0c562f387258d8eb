"""How commands and files reach the pod: local (this machine) or ssh (paramiko)."""
