// The ERC-721 this app follows, and how deep a transfer must be before it
// counts: a node reads owners and events that many blocks below the head.
// tests/nft.sh deploys tests/chains/contracts/TestTokens.sol to a local
// chain and writes this file anew with its address.
export const CONTRACT = '0x0000000000000000000000000000000000000000';
export const CONFIRMATIONS = 2;
