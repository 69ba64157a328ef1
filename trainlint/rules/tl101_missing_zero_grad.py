from trainlint.rules.base import Rule


class R(Rule):
    """(work in progress)"""

    code = "TL101"
    name = "missing-zero-grad"

    def check(self, ctx):
        return iter(())


RULE = R
