// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// What a Proven cluster trusts, on chain: the measurements a node may run
/// (PCR0, PCR1 and PCR2 of its enclave image, with a version), the nodes
/// (name, URL, the hash of their TLS key), and the owners who change them,
/// a change taking `threshold` owners' approvals.
///
/// provend reads `allowed` with storage proofs, so its place is fixed:
/// slot 0 holds its length and keccak256(0) + i its elements, each
/// keccak256(pcr0 . pcr1 . pcr2) (48 bytes each).  Clients (the SDK) read
/// measurements() and nodes() through any endpoint they trust.
contract Governance {
    bytes32[] public allowed;                               // slot 0
    mapping(bytes32 => Measurement) private measured;        // slot 1
    address[] public owners;                                // slot 2
    mapping(address => bool) public isOwner;                // slot 3
    uint256 public threshold;                               // slot 4
    Node[] private nodeList;                                // slot 5
    Proposal[] private proposals;                           // slot 6
    mapping(uint256 => mapping(address => bool)) private approvedBy;
    uint256 public epoch;       // owners or threshold changed: old
                                // proposals and their approvals lapse

    uint256 public constant MEASUREMENTS_MAX = 64;  // what provend reads

    struct Measurement {
        bytes pcr0;
        bytes pcr1;
        bytes pcr2;
        uint64 version;
        uint256 place;          // its index in allowed, plus 1; 0: none
    }

    struct Node {
        string name;
        string url;
        bytes32 tlsKeyHash;     // SHA-256 of its TLS key (SubjectPublicKeyInfo)
    }

    enum Kind { Allow, Remove, AddNode, RemoveNode, AddOwner, RemoveOwner,
                SetThreshold }

    struct Proposal {
        Kind kind;
        bytes data;             // the action's arguments, ABI-encoded
        uint256 approvals;
        bool done;
        uint256 epoch;          // the owners it was proposed to
    }

    event Proposed(uint256 indexed id, Kind kind, address proposer);
    event Approved(uint256 indexed id, address owner);
    event Executed(uint256 indexed id);
    event MeasurementAllowed(bytes32 indexed hash, uint64 version);
    event MeasurementRemoved(bytes32 indexed hash);
    event NodeAdded(string name, string url, bytes32 tlsKeyHash);
    event NodeRemoved(string name);

    modifier onlyOwner() {
        require(isOwner[msg.sender], "only an owner");
        _;
    }

    constructor(address[] memory owners_, uint256 threshold_) {
        require(owners_.length > 0, "at least one owner");
        for (uint256 i = 0; i < owners_.length; i++) {
            addOwner(owners_[i]);
        }
        setThreshold(threshold_);
    }

    // ---- reading ----------------------------------------------------------

    function measurementHash(bytes memory pcr0, bytes memory pcr1,
                             bytes memory pcr2) public pure returns (bytes32)
    {
        require(pcr0.length == 48 && pcr1.length == 48 && pcr2.length == 48,
                "a PCR is 48 bytes");
        return keccak256(abi.encodePacked(pcr0, pcr1, pcr2));
    }

    function allowedCount() external view returns (uint256) {
        return allowed.length;
    }

    /// The measurements allowed now: their PCRs and versions, in one call.
    function measurements() external view
        returns (bytes[] memory pcr0, bytes[] memory pcr1,
                 bytes[] memory pcr2, uint64[] memory version)
    {
        uint256 n = allowed.length;
        pcr0 = new bytes[](n);
        pcr1 = new bytes[](n);
        pcr2 = new bytes[](n);
        version = new uint64[](n);
        for (uint256 i = 0; i < n; i++) {
            Measurement storage m = measured[allowed[i]];
            (pcr0[i], pcr1[i], pcr2[i], version[i]) =
                (m.pcr0, m.pcr1, m.pcr2, m.version);
        }
    }

    function nodes() external view returns (Node[] memory) {
        return nodeList;
    }

    function ownerList() external view returns (address[] memory) {
        return owners;
    }

    // ---- changing: proposed by an owner, done at `threshold` approvals --

    function proposeAllow(bytes calldata pcr0, bytes calldata pcr1,
                          bytes calldata pcr2, uint64 version)
        external onlyOwner returns (uint256)
    {
        measurementHash(pcr0, pcr1, pcr2);      // the lengths, checked now
        require(version > 0, "a version is 1 or more");
        return propose(Kind.Allow, abi.encode(pcr0, pcr1, pcr2, version));
    }

    function proposeRemove(bytes32 hash) external onlyOwner returns (uint256) {
        return propose(Kind.Remove, abi.encode(hash));
    }

    function proposeAddNode(string calldata name, string calldata url,
                            bytes32 tlsKeyHash)
        external onlyOwner returns (uint256)
    {
        return propose(Kind.AddNode, abi.encode(name, url, tlsKeyHash));
    }

    function proposeRemoveNode(string calldata name)
        external onlyOwner returns (uint256)
    {
        return propose(Kind.RemoveNode, abi.encode(name));
    }

    function proposeAddOwner(address owner) external onlyOwner
        returns (uint256)
    {
        return propose(Kind.AddOwner, abi.encode(owner));
    }

    function proposeRemoveOwner(address owner) external onlyOwner
        returns (uint256)
    {
        return propose(Kind.RemoveOwner, abi.encode(owner));
    }

    function proposeThreshold(uint256 threshold_) external onlyOwner
        returns (uint256)
    {
        return propose(Kind.SetThreshold, abi.encode(threshold_));
    }

    function approve(uint256 id) public onlyOwner {
        require(id < proposals.length, "no such proposal");
        Proposal storage p = proposals[id];
        require(!p.done, "done already");
        require(p.epoch == epoch, "the owners have changed since: propose "
                "it again");
        require(!approvedBy[id][msg.sender], "approved already");
        approvedBy[id][msg.sender] = true;
        p.approvals += 1;
        emit Approved(id, msg.sender);
        if (p.approvals >= threshold) {
            p.done = true;
            execute(p.kind, p.data);
            emit Executed(id);
        }
    }

    function propose(Kind kind, bytes memory data) private returns (uint256) {
        proposals.push(Proposal(kind, data, 0, false, epoch));
        uint256 id = proposals.length - 1;
        emit Proposed(id, kind, msg.sender);
        approve(id);
        return id;
    }

    function execute(Kind kind, bytes memory data) private {
        if (kind == Kind.Allow) {
            (bytes memory pcr0, bytes memory pcr1, bytes memory pcr2,
             uint64 version) = abi.decode(data, (bytes, bytes, bytes, uint64));
            bytes32 hash = measurementHash(pcr0, pcr1, pcr2);
            Measurement storage m = measured[hash];
            if (m.place == 0) {
                require(allowed.length < MEASUREMENTS_MAX,
                        "64 measurements at most");
                allowed.push(hash);
                m.place = allowed.length;
            }
            (m.pcr0, m.pcr1, m.pcr2, m.version) = (pcr0, pcr1, pcr2, version);
            emit MeasurementAllowed(hash, version);
        } else if (kind == Kind.Remove) {
            bytes32 hash = abi.decode(data, (bytes32));
            uint256 place = measured[hash].place;
            require(place != 0, "not allowed now");
            require(allowed.length > 1, "the last measurement stays: allow "
                    "another first");
            bytes32 last = allowed[allowed.length - 1];
            allowed[place - 1] = last;
            measured[last].place = place;
            allowed.pop();
            delete measured[hash];
            emit MeasurementRemoved(hash);
        } else if (kind == Kind.AddNode) {
            (string memory name, string memory url, bytes32 tlsKeyHash) =
                abi.decode(data, (string, string, bytes32));
            nodeList.push(Node(name, url, tlsKeyHash));
            emit NodeAdded(name, url, tlsKeyHash);
        } else if (kind == Kind.RemoveNode) {
            string memory name = abi.decode(data, (string));
            for (uint256 i = 0; i < nodeList.length; i++) {
                if (keccak256(bytes(nodeList[i].name)) == keccak256(bytes(name))) {
                    nodeList[i] = nodeList[nodeList.length - 1];
                    nodeList.pop();
                    emit NodeRemoved(name);
                    return;
                }
            }
            revert("no such node");
        } else if (kind == Kind.AddOwner) {
            addOwner(abi.decode(data, (address)));
        } else if (kind == Kind.RemoveOwner) {
            address owner = abi.decode(data, (address));
            require(isOwner[owner], "not an owner");
            require(owners.length - 1 >= threshold, "below the threshold");
            isOwner[owner] = false;
            epoch += 1;
            for (uint256 i = 0; i < owners.length; i++) {
                if (owners[i] == owner) {
                    owners[i] = owners[owners.length - 1];
                    owners.pop();
                    break;
                }
            }
        } else {
            setThreshold(abi.decode(data, (uint256)));
        }
    }

    function addOwner(address owner) private {
        require(owner != address(0) && !isOwner[owner], "a new owner");
        isOwner[owner] = true;
        owners.push(owner);
        epoch += 1;
    }

    function setThreshold(uint256 threshold_) private {
        require(threshold_ >= 1 && threshold_ <= owners.length,
                "a threshold is 1 to the number of owners");
        threshold = threshold_;
        epoch += 1;
    }
}
