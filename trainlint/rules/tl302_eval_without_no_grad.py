from trainlint.rules.base import Rule


class R(Rule):
    """(work in progress)"""

    code = "TL302"
    name = "eval-without-no-grad"

    def check(self, ctx):
        return iter(())


RULE = R
