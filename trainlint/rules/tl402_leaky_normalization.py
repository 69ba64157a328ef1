from trainlint.rules.base import Rule


class R(Rule):
    """(work in progress)"""

    code = "TL402"
    name = "leaky-normalization"

    def check(self, ctx):
        return iter(())


RULE = R
