"""Where pods come from: local (this machine), ssh (a machine you have), runpod (rented, REST v2)."""
