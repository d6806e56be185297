/**
 * Prints the Debian packages the Linux guest's build needs (LINUX_BUILDER_PACKAGES, the list the bake's
 * plan installs on a builder), space-separated, so `.ci/run` installs the same list instead of a copy:
 *
 *   apt-get install $(node --import tsx guest-images/linux/builder-packages-cli.ts)
 */
import { LINUX_BUILDER_PACKAGES } from "./recipe.ts";

console.log(LINUX_BUILDER_PACKAGES.join(" "));
