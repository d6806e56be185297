import assert from "node:assert/strict";
import { zoneOfferingProblem } from "../../components/zone-offerings.ts";

describe("zoneOfferingProblem", () => {
  it("accepts zones where every type is offered", () => {
    assert.equal(
      zoneOfferingProblem(["us-east-1a", "us-east-1b"], {
        "c5.metal": ["us-east-1b", "us-east-1a", "us-east-1c"],
        "m7i.metal-24xl": ["us-east-1a", "us-east-1b"],
      }),
      undefined,
    );
  });

  it("names each type, the zones it is missing from and where it is offered", () => {
    assert.equal(
      zoneOfferingProblem(["us-east-1a", "us-east-1e"], {
        "c5.metal": ["us-east-1c", "us-east-1a"],
        "m7i.metal-24xl": [],
      }),
      "availabilityZones: c5.metal is not offered in us-east-1e (offered in: us-east-1a, us-east-1c); " +
        "m7i.metal-24xl is not offered in us-east-1a, us-east-1e (offered in: no zone of this region); " +
        "list zones where every type is offered in snapfaas:network.availabilityZones",
    );
  });
});
