// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

interface ERC721TokenReceiver {
    function onERC721Received(address operator, address from, uint256 tokenId,
                              bytes calldata data) external returns (bytes4);
}

/// An ERC-721 for the tests and examples/nft-notes, written for them.  Its
/// storage is laid out as OpenZeppelin's ERC721 lays out its own (name at
/// slot 0, symbol 1, the owners mapping 2, balances 3), which is where
/// provend reads an owner from unless an app says otherwise.
contract TestTokens {
    string public name;
    string public symbol;
    mapping(uint256 => address) private owners;
    mapping(address => uint256) private balances;
    mapping(uint256 => address) private approved;
    mapping(address => mapping(address => bool)) private operators;
    address private minter;

    event Transfer(address indexed from, address indexed to,
                   uint256 indexed tokenId);
    event Approval(address indexed owner, address indexed approved,
                   uint256 indexed tokenId);
    event ApprovalForAll(address indexed owner, address indexed operator,
                         bool approved);

    constructor() {
        name = "Proven Test Tokens";
        symbol = "PTT";
        minter = msg.sender;
    }

    function supportsInterface(bytes4 id) external pure returns (bool) {
        return id == 0x80ac58cd || id == 0x01ffc9a7;    // ERC-721, ERC-165
    }

    function balanceOf(address owner) external view returns (uint256) {
        require(owner != address(0), "the zero address owns nothing");
        return balances[owner];
    }

    function ownerOf(uint256 tokenId) public view returns (address) {
        address owner = owners[tokenId];
        require(owner != address(0), "no such token");
        return owner;
    }

    function approve(address to, uint256 tokenId) external {
        address owner = ownerOf(tokenId);
        require(msg.sender == owner || operators[owner][msg.sender],
                "neither the owner nor its operator");
        approved[tokenId] = to;
        emit Approval(owner, to, tokenId);
    }

    function getApproved(uint256 tokenId) external view returns (address) {
        ownerOf(tokenId);
        return approved[tokenId];
    }

    function setApprovalForAll(address operator, bool on) external {
        operators[msg.sender][operator] = on;
        emit ApprovalForAll(msg.sender, operator, on);
    }

    function isApprovedForAll(address owner, address operator)
        external view returns (bool)
    {
        return operators[owner][operator];
    }

    function transferFrom(address from, address to, uint256 tokenId) public {
        address owner = ownerOf(tokenId);
        require(owner == from, "from is not the owner");
        require(to != address(0), "to the zero address: burn instead");
        require(msg.sender == owner || approved[tokenId] == msg.sender
                || operators[owner][msg.sender], "not allowed to transfer");
        delete approved[tokenId];
        balances[from] -= 1;
        balances[to] += 1;
        owners[tokenId] = to;
        emit Transfer(from, to, tokenId);
    }

    function safeTransferFrom(address from, address to, uint256 tokenId)
        external
    {
        safeTransferFrom(from, to, tokenId, "");
    }

    function safeTransferFrom(address from, address to, uint256 tokenId,
                              bytes memory data) public
    {
        transferFrom(from, to, tokenId);
        if (to.code.length > 0) {
            require(ERC721TokenReceiver(to).onERC721Received(
                        msg.sender, from, tokenId, data) == 0x150b7a02,
                    "the receiver refused the token");
        }
    }

    function mint(address to, uint256 tokenId) external {
        require(msg.sender == minter, "only the deployer mints");
        require(to != address(0), "to the zero address");
        require(owners[tokenId] == address(0), "minted already");
        balances[to] += 1;
        owners[tokenId] = to;
        emit Transfer(address(0), to, tokenId);
    }

    function burn(uint256 tokenId) external {
        address owner = ownerOf(tokenId);
        require(msg.sender == owner, "only the owner burns");
        delete approved[tokenId];
        balances[owner] -= 1;
        delete owners[tokenId];
        emit Transfer(owner, address(0), tokenId);
    }
}
