"""The path of one message through a worker: load + gate, claim, halt check, slot, send, record."""
