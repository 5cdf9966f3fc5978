class UserError(Exception):
    """A problem with what the user asked for or gave us: printed as one clear line, exit code 2."""
