"""The exception family of errors.py: every expected failure is a UserError and also the builtin a
caller would naturally catch. (The command line's error contract: tests/cli/test_errors.py.)"""

import pytest

from avfusion.errors import ConfigError, InputError, RunError, UserError


@pytest.mark.parametrize("cls, builtin", [(ConfigError, ValueError), (InputError, ValueError),
                                          (RunError, RuntimeError)])
def test_each_error_is_a_user_error_and_its_builtin(cls, builtin):
    with pytest.raises(UserError):
        raise cls("x")
    with pytest.raises(builtin):
        raise cls("x")

