from trainlint.rules.base import Rule


class R(Rule):
    """(work in progress)"""

    code = "TL301"
    name = "eval-without-eval-mode"

    def check(self, ctx):
        return iter(())


RULE = R
