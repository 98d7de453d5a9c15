"""The one exception type for bad user input.

Every malformed config, `.q` file, assembly line, instruction word, shape or path raises a
`UserError` whose message is one line naming the file (or instruction), the field and the problem,
worded "`<what>` must be `<rule>`, not `<value>`". The CLI prints it and exits 2;
`--debug` shows the traceback.
"""


class UserError(ValueError):
    """Bad input from the user: reported as one line, exit code 2."""
