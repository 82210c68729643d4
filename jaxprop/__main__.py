from jaxprop.cli import command

command()
