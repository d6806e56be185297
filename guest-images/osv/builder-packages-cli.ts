/**
 * Prints the Debian packages the OSv guest's build needs (OSV_BUILDER_PACKAGES, the list the bake's plan
 * installs on a builder), space-separated, so `.ci/run` installs the same list instead of a copy:
 *
 *   apt-get install $(node --import tsx guest-images/osv/builder-packages-cli.ts)
 */
import { OSV_BUILDER_PACKAGES } from "./recipe.ts";

console.log(OSV_BUILDER_PACKAGES.join(" "));
